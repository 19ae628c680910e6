"""The package version (the ``attrs["spora"]`` format has its own: :data:`spora_sd.convert.attrs.FORMAT_VERSION`)."""

__version__ = "0.1.0"
