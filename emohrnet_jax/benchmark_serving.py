"""Speed of inference and of feature extraction, against their bounds (for `benchmark.run`).

Inference runs the model as predict, the service and export build it
(`models.create_model(serving=True)`, BatchNorm folded): one 3 s clip (log-Mel features plus the
forward pass, and the forward pass alone) against its FLOP bound, the clip's convolution and
matmul FLOPs over the matmul peak of the same run; and windows scored in batches of predict's
`--batch_size`, as predict scores a folder, as a fraction of that peak. Feature extraction is
timed in this process on one thread, and in pools of 1 and of every core's worker, as the
dataset builders run it. Only the features and preprocessing need librosa and soundfile.
"""

import os
import statistics
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from emohrnet_jax import cost, models, timing
from emohrnet_jax.audio import synthetic

CLIP_SECONDS = 3.0
# predict's and the service's default `--batch_size`.
FOLDER_BATCH = 64


def _clip_waveform(sample_rate: int) -> np.ndarray:
    """A synthetic utterance tiled to exactly `CLIP_SECONDS` (speech-like content for the STFT)."""
    spec = synthetic.CorpusSpec(num_speakers=1, utterances_per_speaker=len(synthetic.CLASS_NAMES))
    waveform = synthetic.synthesize(synthetic.plan(spec)[0], spec, sample_rate)
    return np.resize(waveform, int(CLIP_SECONDS * sample_rate))


def _features_of(config: ml_collections.ConfigDict, waveform: np.ndarray):
    """(a function giving the clip's normalized log-Mel, a note); without librosa, a random
    normalized map of the same shape and a note saying so."""
    try:
        from emohrnet_jax.audio import features
    except ImportError as error:
        frames = 1 + len(waveform) // config.data.hop_length
        dummy = np.random.default_rng(0).standard_normal((config.data.n_mels, frames))
        dummy = dummy.astype(np.float32)
        return (lambda: dummy), f"inference_rtf: model only, no feature extraction ({error})"
    params = features.FeatureParams.from_config(config.data)
    return (lambda: features.normalize(features.log_mel(waveform, params))), None


def benchmark_inference(
    config: ml_collections.ConfigDict, state, repeats: int, peak_gflops: float
) -> dict[str, Any]:
    """One 3 s clip's time, real-time factor and ratio to its FLOP bound, and batched scoring's
    fraction of the matmul peak `peak_gflops`, for the serving model of `state`'s weights."""
    model = models.create_model(config, serving=True)
    variables = models.fold_batch_norm({"params": state.params, "batch_stats": state.batch_stats})
    forward = jax.jit(model.apply)
    mel_of_clip, note = _features_of(config, _clip_waveform(config.data.sample_rate))
    mel = mel_of_clip()[None]
    started = time.perf_counter()
    jax.block_until_ready(forward(variables, mel))
    results: dict[str, Any] = {"clip_compile_s": time.perf_counter() - started}
    repeats = max(repeats, 3)
    clip_s = statistics.median(
        timing.time_calls(lambda: forward(variables, mel_of_clip()[None]), repeats)
    )
    model_s = statistics.median(timing.time_calls(lambda: forward(variables, mel), repeats))
    bound_s = cost.matmul_flops(model.apply, variables, mel) / (peak_gflops * 1e9)
    results.update(
        inference_clip_s=clip_s,
        inference_rtf=clip_s / CLIP_SECONDS,
        inference_rtf_includes_features=note is None,
        inference_model_clip_s=model_s,
        inference_flop_bound_s=bound_s,
        inference_clip_bound_ratio=clip_s / bound_s,
        inference_model_bound_ratio=model_s / bound_s,
    )
    results.update(_folder_scoring(config, model, forward, variables, repeats, peak_gflops))
    if note:
        results["notes"] = [note]
    return results


def _folder_scoring(config, model, forward, variables, repeats, peak_gflops) -> dict[str, Any]:
    """Windows `(n_mels, num_frames)` scored `FOLDER_BATCH` at a time, as predict scores a folder
    (its features are extracted by other threads meanwhile: see preprocessing)."""
    shape = (FOLDER_BATCH, config.data.n_mels, config.data.num_frames)
    windows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    jax.block_until_ready(forward(variables, windows))
    seconds = statistics.median(timing.time_calls(lambda: forward(variables, windows), repeats))
    gflops = cost.matmul_flops(model.apply, variables, windows) / 1e9
    return {
        "predict_folder_batch": FOLDER_BATCH,
        "predict_folder_windows_per_s": FOLDER_BATCH / seconds,
        "predict_folder_gflops_per_s": gflops / seconds,
        "predict_folder_peak_fraction": gflops / seconds / peak_gflops,
    }


def _rate(pool, extract, paths, params, workers) -> float:
    """Clips/s of `paths` through a started `pool` (its workers warmed up first)."""
    list(pool.map(extract, paths[: 2 * workers], [params] * (2 * workers)))
    started = time.perf_counter()
    # Chunks as in the builders: one round trip per clip would time the IPC instead.
    chunk = max(1, len(paths) // (4 * workers))
    list(pool.map(extract, paths, [params] * len(paths), chunksize=chunk))
    return len(paths) / (time.perf_counter() - started)


def benchmark_preprocessing(config: ml_collections.ConfigDict, num_clips: int) -> dict[str, Any]:
    """Clips/s of feature extraction (decode WAV, log-Mel): in this process on one BLAS thread,
    and through `extraction_pool` with 1 worker and with one per core; `preprocessing_scaling` is
    the second over the first of the pools.

    The clips are synthetic utterances written as 16-bit WAV files at the config's sample rate;
    extraction is `features.extract`, as the dataset builders run it.
    """
    try:
        import soundfile
        import threadpoolctl

        from emohrnet_jax.audio import extraction_pool, features
    except ImportError as error:
        return {"notes": [f"preprocessing skipped: {error}"]}
    params = features.FeatureParams.from_config(config.data)
    spec = synthetic.CorpusSpec(num_speakers=1, utterances_per_speaker=len(synthetic.CLASS_NAMES))
    utterances = synthetic.plan(spec)
    workers = timing.cores()
    with tempfile.TemporaryDirectory(prefix="emohrnet_benchmark_") as folder:
        paths = []
        for i in range(num_clips):
            path = os.path.join(folder, f"clip{i}.wav")
            waveform = synthetic.synthesize(
                utterances[i % len(utterances)], spec, params.sample_rate
            )
            soundfile.write(path, waveform, params.sample_rate, subtype="PCM_16")
            paths.append(path)
        features.extract(paths[0], params)  # librosa's first call builds its filter caches.
        with threadpoolctl.threadpool_limits(1):
            started = time.perf_counter()
            for path in paths:
                features.extract(path, params)
            one_thread = num_clips / (time.perf_counter() - started)
        with extraction_pool.pool(1) as pool:
            one_worker = _rate(pool, features.extract, paths, params, 1)
        with extraction_pool.pool(workers) as pool:
            all_workers = _rate(pool, features.extract, paths, params, workers)
    return {
        "preprocessing_clips_per_s_1_core": one_thread,
        "preprocessing_clips_per_s_1_worker": one_worker,
        "preprocessing_clips_per_s_all_cores": all_workers,
        "preprocessing_workers": workers,
        "preprocessing_scaling": all_workers / one_worker,
    }
