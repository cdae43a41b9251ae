"""shiftpeer: stores and moves ShiftSpace shifts between peer nodes."""

__version__ = "0.1.0"
