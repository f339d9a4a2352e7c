"""YAMNet: the model (``model``), weight conversion from a registry package (``convert``), the TF bundle reader (``bundle``)."""
