"""Load a model file, trusting the code only.

Every model loads here: the service's bundle, and the registry's versions that evaluation,
the gate, rollbacks and `make bundle` score. A version is saved in skops format, which loads
only skops' safe types plus the types `TRUSTED_TYPES` in model.py lists. What the artifact says
about itself is never trusted: MLflow's `MLmodel` can name a pickle format or list any type as
trusted, and so can `bundle.json`; whoever can write the registry's artifact store or a bundle
could then run code in every job and service that loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import skops.io
import yaml
from skops.io.exceptions import UntrustedTypesFoundException

from .errors import RENAMED_CLASS, PipelineError
from .model import TRUSTED_TYPES

MLMODEL = "MLmodel"


class Unloadable(PipelineError):
    """A model file this code does not load: a class it cannot import, or a type model.py does
    not trust."""


def skops_file(model_dir: Path, what: str) -> Path:
    """The skops file of a logged model's folder, refusing any other serialization."""
    flavor = yaml.safe_load((Path(model_dir) / MLMODEL).read_text())["flavors"]["sklearn"]
    name = str(flavor.get("pickled_model", ""))
    if flavor.get("serialization_format") != "skops" or not name or Path(name).name != name:
        raise Unloadable(
            f"{what} is not saved as a skops file (MLmodel names serialization format "
            f"{flavor.get('serialization_format')!r}, file {name!r}): refusing to load it, as a "
            "pickle runs whatever code it holds"
        )
    return Path(model_dir) / name


def load(path: Path, what: str) -> Any:
    """The model in a skops file, allowing skops' safe types and TRUSTED_TYPES only."""
    try:
        return skops.io.load(path, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as err:
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
        raise Unloadable(
            f"{what} holds types TRUSTED_TYPES in model.py does not list: {untrusted}. Only the "
            "code says what may load, never the artifact: review them and list them there (an "
            "estimator model.py no longer builds keeps needing its types while its versions "
            "may be compared with, rolled back to or served)"
        ) from err
    except (AttributeError, ImportError) as err:
        raise Unloadable(
            f"{what} cannot be loaded by this code ({type(err).__name__}: {err}): {RENAMED_CLASS}"
        ) from err
