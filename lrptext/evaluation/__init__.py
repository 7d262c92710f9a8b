"""How faithful an explanation is: delete the features it ranks highest (or lowest) and watch the model.

word_deletion (text models, Arras et al. 2017), bow_word_deletion (scikit-learn bag-of-words pipelines),
pixel_flipping (images: Bach et al. 2015, region perturbation of Samek et al. 2017), token_deletion and
generate_and_prune (Hugging Face classifiers: piece deletion, and Ali et al. 2022's protocol over fractions of the
tokens), the baselines lrptext compares LRP with (sensitivity, gradient x input, integrated gradients, occlusion,
attention rollout, gradient-weighted rollout, random), and the curves' summaries (AOPC, area under the accuracy
curve; AUAC, AUPC, AU-MSE). `lrptext evaluate` runs them on a dataset's test split."""

from lrptext.evaluation.bag_of_words import bow_word_deletion
from lrptext.evaluation.baselines import gradient_attribution
from lrptext.evaluation.curves import Curve, summarise
from lrptext.evaluation.fractions import FractionCurve, summarise_fractions
from lrptext.evaluation.pixels import pixel_flipping
from lrptext.evaluation.transformer_tokens import generate_and_prune, token_deletion
from lrptext.evaluation.words import word_deletion

__all__ = ["Curve", "FractionCurve", "bow_word_deletion", "generate_and_prune", "gradient_attribution",
           "pixel_flipping", "summarise", "summarise_fractions", "token_deletion", "word_deletion"]
