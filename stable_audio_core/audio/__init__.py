"""Audio in and out: reading, writing, resampling (io), FLAC tags (tags), the silence trim and
finiteness checks (postprocess), CLAP's mel features (features)."""
