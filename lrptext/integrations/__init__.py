"""lrptext inside other libraries: a spaCy component, scikit-learn estimators and pipelines (lrptext.explain()
dispatches them here), Ray Data batches."""
