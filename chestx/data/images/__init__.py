"""Image files: format and header checks (`check`), decoding (`read`, `dicom`), the resize cache (`cache`)."""
