"""Offline ontologies: the releases ``cellxgene-ontology-guide`` ships (:mod:`.files`) and the marker ->
UniProt table (:mod:`.proteins`). No lamindb needed.
"""
