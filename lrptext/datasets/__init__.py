"""Document classification datasets: SpamAssassin ships with lrptext; 20 Newsgroups and Reuters R8 are fetched
into a user cache by ``lrptext data fetch NAME`` (datasets/README.md). Nothing downloads at import or explain time."""

from lrptext.datasets.corpus import Split, TextDataset
from lrptext.datasets.registry import DATASETS, DatasetMissingError, cache_dir, fetch, load

__all__ = ["DATASETS", "DatasetMissingError", "Split", "TextDataset", "cache_dir", "fetch", "load"]
