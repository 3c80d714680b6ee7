#include "catch2_session.hpp"

int main(int argc, char* argv[]) { return attnkit::test::run_catch_session(argc, argv); }
