"""Tests of the synthetic corpus: the plan, waveform invariants, emotion effects and difficulty."""

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emohrnet_jax.audio import synthetic

SR = 16000
SMALL = synthetic.CorpusSpec(
    num_speakers=3, utterances_per_speaker=8, min_seconds=1.0, max_seconds=1.5, seed=3
)
# Enough clips for class means to be stable; short clips keep synthesis to a few seconds.
STATS = synthetic.CorpusSpec(
    num_speakers=16, utterances_per_speaker=16, min_seconds=1.5, max_seconds=2.5, seed=11
)


@pytest.fixture(scope="module")
def corpus():
    """The STATS corpus as (labels, speakers, waveforms)."""
    utterances = synthetic.plan(STATS)
    waves = [synthetic.synthesize(u, STATS, SR) for u in utterances]
    labels = np.array([synthetic.CLASS_NAMES.index(u.label) for u in utterances])
    return labels, np.array([u.speaker for u in utterances]), waves


def _frames(wave, size, hop):
    starts = np.arange(0, len(wave) - size + 1, hop)
    return wave[starts[:, None] + np.arange(size)]


def _power_spectrogram(wave, n_fft=1024, hop=256):
    return np.abs(np.fft.rfft(_frames(wave, n_fft, hop) * np.hanning(n_fft))) ** 2


def _mel_filterbank(n_mels=64, n_fft=1024):
    """Triangular filters evenly spaced on the HTK mel scale, `(n_mels, n_fft // 2 + 1)`."""
    mel = np.linspace(0.0, 2595 * np.log10(1 + SR / 2 / 700), n_mels + 2)
    edges = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(
        0.0, np.minimum((freqs - low) / (centre - low), (high - freqs) / (high - centre))
    )


def _median_f0(wave):
    """Median autocorrelation pitch (Hz) over the clearly periodic 40 ms frames."""
    frames = _frames(wave, 640, 160)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(640)
    energy = np.sum(frames**2, axis=1)
    frames = frames[energy > 0.05 * energy.max()]
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(frames, 2048)) ** 2)
    autocorr /= autocorr[:, :1]
    low, high = SR // 400, SR // 60  # lags of 400 Hz and 60 Hz
    lags = low + np.argmax(autocorr[:, low:high], axis=1)
    periodic = autocorr[np.arange(len(lags)), lags] > 0.5
    return float(np.median(SR / lags[periodic]))


def _class_means(values, labels):
    return {name: np.mean(values[labels == k]) for k, name in enumerate(synthetic.CLASS_NAMES)}


def test_plan_is_deterministic_and_seeded():
    assert synthetic.plan(SMALL) == synthetic.plan(SMALL)
    other = synthetic.plan(dataclasses.replace(SMALL, seed=4))
    assert [u.seed for u in other] != [u.seed for u in synthetic.plan(SMALL)]


def test_plan_ids_and_balance():
    spec = dataclasses.replace(SMALL, num_speakers=12)
    utterances = synthetic.plan(spec)
    assert len(utterances) == 12 * 8
    assert len({u.id for u in utterances}) == len(utterances)
    assert len({u.seed for u in utterances}) == len(utterances)
    assert utterances[0].id == "spk00_u0000" and utterances[-1].id == "spk11_u0007"
    for speaker in {u.speaker for u in utterances}:
        labels = [u.label for u in utterances if u.speaker == speaker]
        assert all(u.id.startswith(speaker + "_u") for u in utterances if u.speaker == speaker)
        assert sorted(labels) == sorted(synthetic.CLASS_NAMES * 2)


@pytest.mark.parametrize(
    "change",
    [
        {"utterances_per_speaker": 6},
        {"utterances_per_speaker": 0},
        {"num_speakers": 0},
        {"num_speakers": 2.5},
        {"min_seconds": 3.0, "max_seconds": 2.0},
        {"min_seconds": 0.0},
        {"seed": -1},
    ],
)
def test_bad_spec_raises(change):
    with pytest.raises(ValueError):
        synthetic.plan(dataclasses.replace(SMALL, **change))


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050])
def test_waveform_invariants(sample_rate):
    for utterance in synthetic.plan(SMALL)[::3]:
        wave = synthetic.synthesize(utterance, SMALL, sample_rate)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert np.all(np.isfinite(wave))
        assert np.max(np.abs(wave)) <= 1.0
        assert SMALL.min_seconds <= len(wave) / sample_rate <= SMALL.max_seconds
        assert np.sqrt(np.mean(wave**2)) > 3e-3  # about -50 dBFS


def test_synthesize_is_deterministic_and_varied():
    first, second = synthetic.plan(SMALL)[:2]
    wave = synthetic.synthesize(first, SMALL)
    synthetic._speaker.cache_clear()
    assert synthetic.synthesize(first, SMALL).tobytes() == wave.tobytes()
    n = SR  # every clip is at least a second long
    assert not np.allclose(synthetic.synthesize(second, SMALL)[:n], wave[:n])
    # The same seed spoken by another speaker sounds different.
    other_speaker = dataclasses.replace(first, speaker="spk02")
    assert not np.allclose(synthetic.synthesize(other_speaker, SMALL)[:n], wave[:n])


def test_bad_label_or_rate_raises():
    utterance = synthetic.plan(SMALL)[0]
    with pytest.raises(ValueError):
        synthetic.synthesize(dataclasses.replace(utterance, label="bored"), SMALL)
    with pytest.raises(ValueError):
        synthetic.synthesize(utterance, SMALL, sample_rate=4000)


def test_pitch_is_higher_when_aroused(corpus):
    labels, _, waves = corpus
    semitones = _class_means(np.array([12 * np.log2(_median_f0(w)) for w in waves]), labels)
    assert semitones["angry"] - semitones["sad"] > 2.0
    assert semitones["happy"] - semitones["sad"] > 2.0
    assert semitones["happy"] - semitones["neutral"] > 1.0


def test_angry_is_louder_than_sad(corpus):
    labels, _, waves = corpus
    level_db = _class_means(np.array([10 * np.log10(np.mean(w**2)) for w in waves]), labels)
    assert level_db["angry"] - level_db["sad"] > 4.0
    assert level_db["angry"] - level_db["neutral"] > 1.5


def test_angry_is_brighter_than_sad(corpus):
    """Vocal effort raises the alpha ratio: energy in 1-5 kHz over 50 Hz-1 kHz, in loud frames."""
    labels, _, waves = corpus
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    high, low = (freqs >= 1000) & (freqs < 5000), (freqs >= 50) & (freqs < 1000)
    ratios = []
    for wave in waves:
        power = _power_spectrogram(wave)
        loud = power[power.sum(axis=1) > 0.1 * power.sum(axis=1).max()]
        ratios.append(10 * np.log10(loud[:, high].sum() / loud[:, low].sum()))
    alpha_db = _class_means(np.array(ratios), labels)
    assert alpha_db["angry"] - alpha_db["sad"] > 3.0
    assert alpha_db["angry"] - alpha_db["neutral"] > 1.5


def test_mean_log_mel_is_learnable_but_not_trivial(corpus):
    """A linear classifier on each clip's mean log-Mel spectrum, scored on unseen speakers."""
    labels, speakers, waves = corpus
    filterbank = _mel_filterbank()
    features = np.array(
        [np.log(_power_spectrogram(w) @ filterbank.T + 1e-10).mean(axis=0) for w in waves]
    )
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = cross_val_predict(classifier, features, labels, groups=speakers, cv=GroupKFold(4))
    accuracy = np.mean(predicted == labels)
    assert 0.4 < accuracy < 0.9, accuracy
