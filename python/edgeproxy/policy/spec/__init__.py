"""The policy spec (the YAML form SREs write), one module per section of the document;
``policy.schema`` assembles the whole and is where the rest of the code imports it from."""
