"""The paper's training recipe and feature defaults, shared by every dataset config.

Dataset configs import this module (`from configs import default`) and override the dataset
fields. Every value can be overridden on the command line, e.g. `--config.batch_size=32
--config.model.dtype=bfloat16`.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    """Returns the default config (EmoHRNet's recipe on the built-in synthetic corpus)."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Root PRNG seed: parameter init, data order and augmentation keys.

    # Optimizer: optax AdamW with the paper's values.
    config.learning_rate = 1e-3  # Peak learning rate.
    config.b1 = 0.9  # Adam first-moment decay.
    config.b2 = 0.999  # Adam second-moment decay.
    config.weight_decay = 1e-4  # Decoupled weight decay (AdamW).
    config.batch_size = 64  # Global batch, split over every device of every host.
    config.num_epochs = 100  # Passes over the training split.
    config.lr_schedule = "constant"  # "constant" (the paper) or "cosine" decay to 0.
    config.warmup_epochs = 0.0  # Linear warm-up from 0 (0: none, the paper).
    config.grad_clip_norm = 0.0  # Clip gradients to this global norm (0: off, the paper).
    # Class imbalance: "none" (the paper) or "balanced", each class's training-loss weight
    # n / (k * count) from the training split (scikit-learn's "balanced"; weights average 1 over
    # the training examples), the loss then sum(w * loss) / sum(w) over the batch. Evaluation's
    # loss stays unweighted. Use this or data.sampling="balanced", not both (they over-correct).
    config.class_weights = "none"
    config.keep_checkpoints = 2  # Latest checkpoints kept for resuming (the best is kept too).
    # Speaker-bootstrap resamples of the results' 95% intervals (drawn from `seed`).
    config.bootstrap_resamples = 1000
    # How validation and test utterances are scored: "utterance" (every window of the whole
    # utterance, logits averaged, as `predict` does) or "centre_crop" (the middle num_frames).
    config.evaluation = "utterance"
    config.evaluation_hop_frames = 0  # Frames between an utterance's windows (0: half a window).
    # Fit a temperature on the validation split after training (calibrates the probabilities,
    # changes no prediction); `predict` uses it.
    config.temperature_scaling = True

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "synthetic"  # tfds name (synthetic, ravdess, iemocap, ...) or "mixture"
    config.data.data_dir = config_dict.placeholder(str)  # tfds data_dir; None = tfds default.
    # labelled_folder: the CSV the corpus was prepared from (each CSV is its own build).
    config.data.csv = config_dict.placeholder(str)
    config.data.fold = 0  # Speaker-independent fold of the dataset's protocol (0-based).
    config.data.num_folds = config_dict.placeholder(int)  # None: the corpus's protocol.
    # How a fold splits the corpus (docs/data.md#folds): "speaker" (speaker-independent folds),
    # "random" (stratified utterances, speaker-dependent: results not comparable with speaker-
    # independent ones; num_folds or 5) or "emobox" (an EmoBox fold file, `fold_file`).
    config.data.protocol = "speaker"
    # Shuffles "random" folds and draws "emobox" validation speakers; apart from `seed`, so a
    # cross-validation's folds are the same for every training seed.
    config.data.split_seed = 0
    # "emobox": the fold's <corpus>_train_fold_<k>.jsonl (test file beside it) or "TRAIN,TEST".
    config.data.fold_file = config_dict.placeholder(str)
    config.data.iemocap_dialogs = "all"  # IEMOCAP: "all" or "improvised" (every split).
    # Several corpora in one run (docs/data.md#several-corpora): dataset="mixture" and one
    # ConfigDict per corpus (dataset, name, label_map onto class_names, weight, its own csv,
    # label_set, protocol, ...), e.g. configs/multi_corpus.py. protocol may then also be
    # "leave_one_corpus_out" (fold k tests on corpus k).
    config.data.datasets = ()
    # Each corpus's share of a training epoch: "size" (every utterance once), "equal" or "given"
    # (the entries' weights).
    config.data.mixture = "size"
    config.data.class_names = ("neutral", "happy", "angry", "sad")  # Label order of the logits.
    config.data.sample_rate = 16000  # Hz; audio is resampled to this before the STFT.
    config.data.n_fft = 1024  # STFT size in samples (64 ms at 16 kHz).
    config.data.hop_length = 256  # STFT hop in samples (16 ms at 16 kHz).
    config.data.n_mels = 128  # Mel bands (the model's input height).
    config.data.fmin = 0.0  # Lowest Mel filter edge in Hz.
    config.data.fmax = 8000.0  # Highest Mel filter edge in Hz (Nyquist at 16 kHz).
    config.data.log_floor = 1e-10  # Mel power floor before the natural log.
    config.data.min_seconds = 0.25  # Shorter clips are skipped (and counted) when preparing.
    # Prepared with --skip_unknown_labels (files of other labels left out): the build to train on.
    config.data.skip_unknown_labels = False
    # Training order: "shuffle" (the paper) or "balanced": as many examples per epoch, every class
    # drawn equally often (each class's examples reshuffled and repeated as needed).
    config.data.sampling = "shuffle"
    # "utterance" (the paper): one mean and variance over all of an utterance's cells, keeping
    # the spectral tilt (a cue of vocal effort); "utterance_band": each Mel band's own over the
    # utterance's frames (removes the tilt and the channel's colour, like CMVN); "training_band":
    # each band's over all frames of the fold's training split (saved in normalization.json).
    config.data.normalization = "utterance"
    config.data.num_frames = 188  # Crop (and scoring window) in frames: 1 + 3 s * 16000 / 256.
    # Built-in synthetic corpus (used when dataset == "synthetic").
    config.data.synthetic_speakers = 40  # Synthetic speakers (split by speaker into folds).
    config.data.synthetic_utterances_per_speaker = 80  # Per speaker, balanced over classes.
    config.data.synthetic_seed = 0  # Seed of the synthetic corpus.

    # Cross-corpus evaluation (`--mode=evaluate`): score the run on another prepared corpus.
    config.cross_corpus = ml_collections.ConfigDict()
    config.cross_corpus.dataset = config_dict.placeholder(str)  # None: the training corpus.
    config.cross_corpus.label_set = "4class"  # When that corpus is IEMOCAP.
    config.cross_corpus.csv = config_dict.placeholder(str)  # When it is labelled_folder: its CSV.
    # "theirs=ours" pairs, e.g. "joy=happy,anger=angry"; empty: the classes sharing a name.
    # Their classes left out of the mapping are left out of the scores (and counted).
    config.cross_corpus.label_map = ""

    config.model = ml_collections.ConfigDict()
    config.model.variant = "w18"  # tiny, w18_small_v1, w18_small_v2 or w18 (official widths).
    config.model.num_classes = 4  # Must equal len(config.data.class_names).
    config.model.stem_strides = ((2, 2), (2, 2))  # (freq, time) stride of each 3x3 stem conv.
    config.model.dtype = "float32"  # Compute dtype: float32, or bfloat16 on TPU/GPU.
    config.model.param_dtype = "float32"  # Parameter (and optimizer state) dtype.
    # 3x3 convolutions as matmuls over their patches, which XLA's CPU backend runs faster than
    # its convolutions: "auto" (their kernel gradients on CPU from 64 channels up), "on" (the whole
    # convolution, any backend) or "off" (XLA's convolutions). Same parameters and outputs.
    config.model.im2col = "auto"

    config.augment = ml_collections.ConfigDict()
    config.augment.time_shift = True  # Random time shift of the training crop.
    config.augment.max_time_shift = 16  # Largest shift in frames (0.26 s), either direction.
    config.augment.spec_augment = True  # SpecAugment frequency and time masking.
    config.augment.num_freq_masks = 2  # Frequency masks per example.
    config.augment.freq_mask_width = 24  # F: each mask covers f ~ U{0..F} Mel bands.
    config.augment.num_time_masks = 2  # Time masks per example.
    config.augment.time_mask_width = 32  # T: each mask covers t ~ U{0..T} frames...
    config.augment.max_time_mask_fraction = 0.2  # ...and at most this fraction of the crop.
    config.augment.mask_value = "mean"  # Fill of masked and shifted-in cells: "mean" or "zero".
    return config
