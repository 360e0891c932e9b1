"""Research studies that chose a recipe, a policy or a format, one folder a docs page. Run from the repo
root as `python -m studies.TOPIC.NAME`; nothing here is part of the installed package."""
