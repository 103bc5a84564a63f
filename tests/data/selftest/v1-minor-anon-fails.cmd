demand_paging_test -v 1 -b 16M -u MINOR
exit 254
