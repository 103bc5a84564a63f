demand_paging_test -o -v 4 -b 16M -u MISSING
exit 0
