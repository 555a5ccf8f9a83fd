"""Disentanglement metrics with disentanglement_lib's definitions: see ``pyro_vae.disentanglement.metrics``."""
