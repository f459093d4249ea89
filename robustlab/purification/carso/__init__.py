"""CARSO (Ballarin et al.): a representation-conditioned cVAE purifier over a frozen adversarially trained
classifier. Importing this package registers the ``carso`` model; its training objective is
:mod:`robustlab.training.objectives.carso`."""

from robustlab.purification.carso.aggregation import AGGREGATIONS, aggregate
from robustlab.purification.carso.model import CARSO, carso_of, check_same_dataset
from robustlab.purification.carso.representation import RepresentationExtractor

__all__ = ["AGGREGATIONS", "CARSO", "RepresentationExtractor", "aggregate", "carso_of", "check_same_dataset"]
