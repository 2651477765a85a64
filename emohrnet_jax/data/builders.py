"""tensorflow-datasets builders: raw corpora to log-Mel TFRecords, one builder per corpus.

What they share (features, parallel extraction, metadata, the build summary) is in
`builder_base`; each builder here names its classes and lists its corpus (`corpora`).
"""

import dataclasses
import os
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from emohrnet_jax import storage
from emohrnet_jax.audio import features, synthetic
from emohrnet_jax.data import acted_corpora, corpora, csv_corpus, partitioned_corpora, sources
from emohrnet_jax.data.builder_base import (
    PARTITIONS_KEY,
    SPLIT,
    SUMMARY_FILE,
    EmotionBuilder,
    EmotionConfig,
    make_config,
)

__all__ = ["BUILDERS", "PARTITIONS_KEY", "SPLIT", "SUMMARY_FILE", "make_config", "prepare"]


class Ravdess(EmotionBuilder):
    """RAVDESS speech, audio-only: 1440 clips, 8 emotions, 24 actors."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download Audio_Speech_Actors_01-24.zip from https://zenodo.org/record/1188976 (CC BY-NC-SA 4.0)
    and unzip it into the manual folder, giving Actor_01/03-01-01-01-01-01-01.wav, ...
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return corpora.RAVDESS_CLASSES

    def listing(self, manual_dir):
        return corpora.ravdess(manual_dir, self.builder_config.skip_unknown_labels)


class Iemocap(EmotionBuilder):
    """IEMOCAP: 5 sessions, 10 speakers; the 4-class set (exc merged into hap) by default."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    IEMOCAP is licensed by USC SAIL (https://sail.usc.edu/iemocap/). Put IEMOCAP_full_release's
    Session1 ... Session5 folders in the manual folder (SessionN/dialog/EmoEvaluation/*.txt and
    SessionN/sentences/wav/<dialog>/<utterance>.wav are read).
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    @classmethod
    def identity(cls, options):
        return {"label_set": options.get("label_set", "4class")}

    def class_names(self):
        label_set = self.builder_config.label_set
        if label_set not in corpora.IEMOCAP_CLASSES:
            raise ValueError(
                f"unknown IEMOCAP label set {label_set!r}; choose one of "
                f"{sorted(corpora.IEMOCAP_CLASSES)}"
            )
        return corpora.IEMOCAP_CLASSES[label_set]

    def listing(self, manual_dir):
        return corpora.iemocap(manual_dir, self.builder_config.label_set)


class Emovo(EmotionBuilder):
    """EMOVO (Italian): 588 clips, 7 emotions, 6 speakers."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download EMOVO (http://voice.fub.it/activities/corpora/emovo/index.html) and unzip it into the
    manual folder: files named <emotion>-<speaker>-<sentence>.wav (e.g. dis-m3-b1.wav), in any
    sub-folders.
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return corpora.EMOVO_CLASSES

    def listing(self, manual_dir):
        return corpora.emovo(manual_dir, self.builder_config.skip_unknown_labels)


class CremaD(EmotionBuilder):
    """CREMA-D: 7442 clips, 6 emotions, 91 actors, 12 sentences."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Clone https://github.com/CheyneyComputerScience/CREMA-D with git-lfs (`git lfs clone`; a plain
    zip holds only lfs pointers) or get it from its GitLab mirror (Open Database License) and give
    the folder holding AudioWAV/1001_DFA_ANG_XX.wav, ... as the manual folder.
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return acted_corpora.CREMA_D_CLASSES

    def listing(self, manual_dir):
        return acted_corpora.crema_d(manual_dir, self.builder_config.skip_unknown_labels)


class Emodb(EmotionBuilder):
    """EmoDB (Berlin, German): 535 clips, 7 emotions, 10 speakers."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download EmoDB from http://emodb.bilderbar.info (cite Burkhardt et al., Interspeech 2005, as
    the site asks) and unzip it into the manual folder, giving wav/03a01Fa.wav, ...
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return acted_corpora.EMODB_CLASSES

    def listing(self, manual_dir):
        return acted_corpora.emodb(manual_dir, self.builder_config.skip_unknown_labels)


class Tess(EmotionBuilder):
    """TESS (Toronto): 2800 clips, 7 emotions, 2 speakers, 200 words."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download TESS from https://doi.org/10.5683/SP2/E8H2MF (Scholars Portal Dataverse, CC BY-NC-ND
    4.0; also on Kaggle) and unzip it into the manual folder: OAF_angry/OAF_back_angry.wav, ...
    (folder spellings vary between copies; the label is read from the file name).
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return acted_corpora.TESS_CLASSES

    def listing(self, manual_dir):
        return acted_corpora.tess(manual_dir, self.builder_config.skip_unknown_labels)


class Savee(EmotionBuilder):
    """SAVEE (Surrey): 480 clips, 7 emotions, 4 male speakers."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Register at http://kahlan.eps.surrey.ac.uk/savee/ (see its terms) and unzip AudioData into
    the manual folder, giving AudioData/DC/a01.wav, ...; the flat Kaggle copy (DC_a01.wav, ...)
    is read as well.
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return acted_corpora.SAVEE_CLASSES

    def listing(self, manual_dir):
        return acted_corpora.savee(manual_dir, self.builder_config.skip_unknown_labels)


class LabelledFolder(EmotionBuilder):
    """Any corpus given as audio files plus a CSV of `path,label,speaker`.

    The class names are a builder argument, not config: a built dataset restores them from disk.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Write a CSV with the header `path,label,speaker` (optional `id`), one line per clip; paths are
    relative to the CSV's folder or absolute
    (`tools/prepare_data.py --dataset=labelled_folder --csv=...`).
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def __init__(self, *, class_names: tuple[str, ...] | None = None, **kwargs: Any):
        self._class_names = tuple(class_names) if class_names else None
        super().__init__(**kwargs)

    @classmethod
    def identity(cls, options):
        return {**super().identity(options), "csv": options.get("csv_path", "")}

    def class_names(self):
        return self._class_names

    def listing(self, manual_dir):
        csv_path, names = self.builder_config.csv_path, self._class_names
        if not csv_path or not names:
            raise ValueError("listing labelled_folder needs the config's csv_path and class_names")
        skip = self.builder_config.skip_unknown_labels
        listing, _ = csv_corpus.labelled_folder(csv_path, names, skip)
        return listing


def extract_synthetic(
    utterance: synthetic.SyntheticUtterance,
    spec: synthetic.CorpusSpec,
    params: features.FeatureParams,
) -> dict[str, Any]:
    """Log-Mel features of one synthetic utterance, in the same form as `features.extract`."""
    waveform = synthetic.synthesize(utterance, spec, params.sample_rate)
    return {
        "mel": features.log_mel(waveform, params),
        "duration": waveform.shape[0] / params.sample_rate,
        "conversions": (),
    }


class Synthetic(EmotionBuilder):
    """The built-in corpus: source-filter synthetic speech, no download."""

    # The corpus is code: a new synthesizer is a new version, so an older corpus is rebuilt.
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Stronger pitch accents and final rises, slower sad speech, intensity U(0.75, 1).",
    }
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []
    READS_FILES = False

    @classmethod
    def identity(cls, options):
        return {"corpus": dataclasses.asdict(options.get("corpus", synthetic.CorpusSpec()))}

    def class_names(self):
        return synthetic.CLASS_NAMES

    def listing(self, manual_dir):
        planned = synthetic.plan(self.builder_config.corpus)
        utterances = [
            corpora.Utterance(f"synthetic:{u.id}", u.label, u.speaker, u.id) for u in planned
        ]
        return corpora.Listing(utterances=utterances, excluded={})

    def _jobs(self, listing):
        params, spec = self.builder_config.feature_params, self.builder_config.corpus
        return ((u, spec, params) for u in synthetic.plan(spec))

    _extract = staticmethod(extract_synthetic)


class Esd(EmotionBuilder):
    """ESD: 35,000 clips, 5 emotions, 10 Mandarin and 10 English speakers, official partitions."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    ESD (Emotional Speech Dataset) is obtained as https://github.com/HLTSingapore/Emotional-Speech-Data
    says (licence there: research use). Unzip it into the manual folder, giving
    0001/Angry/[train/]0001_000351.wav, ... (with or without the train/evaluation/test folders).
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return partitioned_corpora.ESD_CLASSES

    def listing(self, manual_dir):
        return partitioned_corpora.esd(manual_dir)


class MspPodcast(EmotionBuilder):
    """MSP-Podcast: the 8 primary classes, in the release's Split_Set partitions."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    MSP-Podcast is licensed by the MSP Lab, UT Dallas
    (https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html). Put the release
    folder's Labels/labels_consensus.csv and Audios/*.wav in the manual folder.
    """
    BUILDER_CONFIGS: ClassVar[list[EmotionConfig]] = []

    def class_names(self):
        return partitioned_corpora.MSP_PODCAST_CLASSES

    def listing(self, manual_dir):
        skip = self.builder_config.skip_unknown_labels
        return partitioned_corpora.msp_podcast(manual_dir, skip)


BUILDERS = {
    b.name: b
    for b in (
        *(Ravdess, Iemocap, Emovo, CremaD, Emodb, Tess, Savee),
        *(LabelledFolder, Synthetic, Esd, MspPodcast),
    )
}

# The default configs, so that `tfds.builder(NAME, data_dir=...)` finds what prepare_data built.
for _builder in BUILDERS.values():
    _builder.BUILDER_CONFIGS.append(make_config(_builder.name))


def prepare(
    dataset: str,
    data_dir: str | None,
    manual_dir: str | None = None,
    feature_params: features.FeatureParams | None = None,
    num_workers: int | None = None,
    beam_options: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Builds `dataset`'s TFRecords and returns the build summary; with `beam_options`
    (`beam_build.pipeline_options`), the features are extracted on Apache Beam.

    A build is kept when its sources are unchanged or its raw files (`manual_dir`) are not at
    hand, else rebuilt (so is one older than source fingerprints) and `rebuilt` says why.
    `labelled_folder`'s `options`: `csv_path`, optionally `class_names` (default: sorted labels).

    Raises:
      locks.LockedError: another process is building the same dataset and config (its build
        folder, data_dir/dataset/config, is locked while building).
    """
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}")
    builder_args: dict[str, Any] = {"beam_options": beam_options}
    if dataset == "labelled_folder":
        csv_path = options["csv_path"] = os.path.realpath(options["csv_path"])
        names = options.pop("class_names", None) or csv_corpus.labelled_folder(csv_path)[1]
        builder_args["class_names"] = tuple(names)
    config = make_config(dataset, feature_params, **options)
    builder = tfds.builder(dataset, data_dir=data_dir, config=config, **builder_args)
    reason = sources.build_if_changed(builder, manual_dir, num_workers, builder_args)
    summary = storage.read_json(os.path.join(builder.data_dir, SUMMARY_FILE))
    return {**summary, "data_dir": builder.data_dir, **({"rebuilt": reason} if reason else {})}
