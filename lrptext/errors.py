"""The exceptions lrptext raises beyond ValueError/TypeError."""


class UnsupportedLayerError(Exception):
    """A node of the model has no LRP rule in lrptext; the message names it and the way out."""
