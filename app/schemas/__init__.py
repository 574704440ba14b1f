"""Pydantic request and response models; never shared with the ORM."""
