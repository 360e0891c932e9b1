"""binsight: count the items in Amazon bin photos. The library behind the DVC stages in stages/."""
