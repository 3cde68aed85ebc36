"""The lab report: gathering the scripts' outputs, the document they make, its HTML
and Word writers, the wording in English and Ukrainian, templates and catalogues."""
