"""The model: the torchvision backbone with a counting head, its losses and how each decodes to a count,
and the metadata targets of the auxiliary head. Imports binsight.data and the top-level modules."""
