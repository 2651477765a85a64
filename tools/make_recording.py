"""Writes a constructed recording (emohrnet_jax.audio.recording) of any length as a 16 kHz WAV.

  python tools/make_recording.py --output=/tmp/hour.wav --seconds=3600

Neutral 10 s, angry 8 s, silence 3 s, sad 10 s by a test speaker of the demo, repeated to
`--seconds`: for looking at timelines, measuring their memory on long files and checking the
speech detector on noise (`--noise_db`).
"""

from absl import app, flags

from emohrnet_jax.audio import recording

_OUTPUT = flags.DEFINE_string("output", None, "The WAV file to write.", required=True)
_SECONDS = flags.DEFINE_float("seconds", 31.0, "Its length.", lower_bound=0.1)
_NOISE_DB = flags.DEFINE_float(
    "noise_db", None, "White noise of this RMS (dB re full scale) added throughout."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    seconds = recording.write_tiled(_OUTPUT.value, _SECONDS.value, noise_db=_NOISE_DB.value)
    print(f"wrote {_OUTPUT.value}: {seconds:.1f} s")


if __name__ == "__main__":
    app.run(main)
