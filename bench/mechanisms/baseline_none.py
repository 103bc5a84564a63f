from .base import Mechanism


class NoneBaseline(Mechanism):
    name = "none"
    summary = "no userfaultfd: the kernel zero-fills each page (the floor of the fault path)"
    c_name = "none"
    uses_uffd = False
    kernel_path = ("shadow page fault (PVM) -> hva_to_pfn -> get_user_pages -> "
                   "do_anonymous_page: the kernel zero-fills; no userfaultfd is registered")
