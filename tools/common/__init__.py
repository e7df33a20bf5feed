"""What every room of the tools shares and nothing else: printable text (``text``), progress bars
(``progress``), the content-addressed cache (``cache``). It imports no other module of the tools."""
