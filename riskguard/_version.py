"""The single source of riskguard's version number."""

__version__ = "0.1.0"
