"""Published policies that built-in judge formats show their models (policy files, see
:mod:`..policy`); each file names its source."""
