"""keeper-iam-rotator: rotates AWS IAM console passwords into Keeper PAM User records."""
