"""Training: data, the three tasks (VAE, CLAP, diffusion) and the generic trainer."""
