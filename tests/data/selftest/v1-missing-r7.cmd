demand_paging_test -v 1 -b 16M -u MISSING
exit 0
