"""Reading TFDS datasets that are already prepared, without downloads and without TensorFlow."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence

from p2t_jax.data.cache import DataUnavailableError
from p2t_jax.data.images import ImageRecords


@contextlib.contextmanager
def _quiet_absl():
    """Hides TFDS's absl warnings about missing dataset folders while probing."""
    from absl import logging

    before = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(before)


@contextlib.contextmanager
def _own_temp_dir():
    """Points ``tempfile`` at a folder removed afterwards: TFDS's metadata probe leaves a
    ``tmp*tfds`` folder in the system temp dir on every call otherwise."""
    before = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="p2t_tfds_") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = before


def installed() -> bool:
    """Whether ``tensorflow_datasets`` can be imported here (it is a dependency, but a machine
    with its own preinstalled stack may lack it: then no TFDS dataset counts as prepared)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow_datasets") is not None


def not_prepared(name: str, hint: str = "") -> DataUnavailableError:
    """The error for a TFDS dataset asked for that cannot be read here, in one sentence saying why:
    TFDS missing, or ``name`` not prepared (``hint``: what else the user may do, e.g. another source)."""
    if not installed():
        return DataUnavailableError(f"TFDS {name} cannot be read: the package tensorflow-datasets is not installed "
                                    f"(pip install tensorflow-datasets){hint}.")
    return DataUnavailableError(f"TFDS {name} is not prepared in the TFDS data dir and downloads are off; prepare it "
                                f"with `tfds build {name}` (or set --config.data.tfds_data_dir to where it is){hint}.")


def prepared_split(name: str, split: str, data_dir: str | None = None) -> Sequence[dict] | None:
    """Random-access records of a prepared TFDS split, or None when it is not prepared.

    Never downloads. ArrayRecord datasets are read with ``tfds.data_source`` (no
    TensorFlow); TFRecord ones through ``tfds.load`` when TensorFlow is installed.

    Args:
      name: TFDS dataset name, e.g. ``"mnist"``.
      split: e.g. ``"train"``.
      data_dir: the TFDS data dir; None means TFDS's default (``$TFDS_DATA_DIR``).

    Returns:
      A sequence of feature dicts (numpy values), or None (also when TFDS is not installed).

    Raises:
      DataUnavailableError: the split is prepared but cannot be read here.
    """
    if not installed():
        return None
    import tensorflow_datasets as tfds

    with _quiet_absl(), _own_temp_dir():
        try:
            return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as array_record_error:
            try:
                prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
            except Exception:  # unknown dataset name or unreadable data dir
                prepared = False
            if not prepared:
                return None
            try:
                dataset = tfds.load(name, split=split, data_dir=data_dir, download=False)
                return list(tfds.as_numpy(dataset))
            except Exception as e:
                raise DataUnavailableError(
                    f"TFDS {name}/{split} is prepared but unreadable here ({type(array_record_error).__name__}; "
                    f"TFRecord datasets need the 'tf' extra): {e}") from e


def prepared_image_splits(name: str, data_dir: str | None = None,
                          splits: Sequence[str] = ("train", "test")) -> dict[str, ImageRecords] | None:
    """Every split in ``splits`` of the prepared TFDS image dataset ``name`` (records with ``image``
    and ``label``) as :class:`ImageRecords`, or None when one of them is not prepared (never downloads)."""
    out = {}
    for split in splits:
        records = prepared_split(name, split, data_dir)
        if records is None:
            return None
        out[split] = ImageRecords.from_records(records)
    return out
