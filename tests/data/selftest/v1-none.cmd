demand_paging_test -v 1 -b 16M
exit 0
