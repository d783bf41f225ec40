"""Label files as data: the `LabelTable` (`table`), patient-level splits (`splits`), label statistics (`stats`)."""
