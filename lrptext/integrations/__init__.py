"""lrptext inside other libraries' pipelines: a spaCy component (and, later, scikit-learn estimators)."""
