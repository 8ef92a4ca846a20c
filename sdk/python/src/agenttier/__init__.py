"""AgentTier SDK."""
from agenttier._version import __version__
