"""The read side of nightscan: the HTTP API, exports, HTML reports and DICOM SR. It never writes results."""
