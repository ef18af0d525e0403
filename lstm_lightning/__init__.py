"""lstm_lightning: muP width-scaling research on LSTM language models, with Lightning."""

__version__ = "0.1.0"
