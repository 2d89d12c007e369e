"""Model loading: diffusers folders and the built-in models, the handles nodes pass around, text and VAE ops."""
