demand_paging_test -v 2 -b 16M -u MISSING -c 0,1
exit 0
