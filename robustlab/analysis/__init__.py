"""Analyses of trained models (latent-space projections and plots)."""
