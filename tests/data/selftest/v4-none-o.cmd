demand_paging_test -o -v 4 -b 16M
exit 0
