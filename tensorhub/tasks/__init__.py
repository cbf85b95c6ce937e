"""Task distribution: the queue (distributor side), claims and leases (runner side), states."""
