"""CARSO (Ballarin et al.): a representation-conditioned cVAE purifier over a frozen adversarially trained
classifier. Importing this package registers the ``carso`` model and the ``carso`` training objective."""

from robustlab.purification.carso import objective  # noqa: F401  (registers the objective)
from robustlab.purification.carso.aggregation import AGGREGATIONS, aggregate
from robustlab.purification.carso.model import CARSO, carso_of, check_same_dataset
from robustlab.purification.carso.objective import beta_schedule, mix_batch, split_sizes, vae_loss
from robustlab.purification.carso.representation import RepresentationExtractor

__all__ = ["AGGREGATIONS", "CARSO", "RepresentationExtractor", "aggregate", "beta_schedule", "carso_of",
           "check_same_dataset", "mix_batch", "split_sizes", "vae_loss"]
