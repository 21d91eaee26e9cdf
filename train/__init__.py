"""Train SigLIP-family two-tower encoders with the sigmoid loss."""
