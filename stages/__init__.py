"""binsight: count the objects in Amazon Bin Image Dataset photos, one DVC stage per module."""
