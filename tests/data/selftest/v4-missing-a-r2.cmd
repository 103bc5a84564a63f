demand_paging_test -a -r 2 -v 4 -b 16M -u MISSING
exit 0
