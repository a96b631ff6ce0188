"""Mail rules: their validated model (`model`) and pure evaluation against a message (`evaluate`)."""
