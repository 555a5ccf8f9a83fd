"""Studies of ELBO gradient estimators, above the models and evaluation they measure and apart from the ELBOs that
training uses (:mod:`pyro_vae.inference`):

* :mod:`~pyro_vae.studies.estimators`: the estimators (reparameterized, score function with baselines, ...) behind
  one interface, and their repeated gradient samples;
* :mod:`~pyro_vae.studies.comparison`: their variance on a VAE, fresh and trained, and training with each;
* :mod:`~pyro_vae.studies.discrete`: bias, variance and MSE against the exact gradient of a discrete latent;
* :mod:`~pyro_vae.studies.toy`: the toy d/dtheta E[x^2], x ~ N(theta, 1), with its analytic variances.
"""
