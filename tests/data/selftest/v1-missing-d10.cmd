demand_paging_test -d 10 -v 1 -b 16M -u MISSING
exit 0
