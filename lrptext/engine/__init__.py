"""The explanation engine: Explainer, explain(), support_table() and the Explanation they return."""

from lrptext.engine.explainer import Explainer, explain, support_table
from lrptext.engine.explanation import Explanation
from lrptext.engine.targets import Contrast

__all__ = ["Contrast", "Explainer", "Explanation", "explain", "support_table"]
