"""The package's version, in one place: the build reads it from here (pyproject.toml, scikit-build-core's regex
provider) into the wheel's metadata and into the compiled module (lrptext.build_info()["version"])."""

__version__ = "0.1.0"
