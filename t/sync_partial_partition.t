#!/usr/bin/perl

# Resume during a partial partition (docs/PROTOCOL.md 4.6): node A (0)
# holds a record it applied from node C (2), which it does not forward
# live; B (1) cannot reach C.  A's live POSITION frames cover that record,
# so B must not store them while it is not connected to every member it
# knows: when A later resumes to B (after a reload of A), the record
# reaches B although C, the only other holder, is gone.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::Util qw(wait_for);

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)
	->plan(8);

my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        @SERVERS@
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=kv:1m sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /api/ {
            api write=on;
        }
    }
}

EOF

# A knows B and C; B knows A and C at an address nobody listens on (the
# B-C link is cut, but C is still a member for B); C knows only A
my %servers = (
	0 => '%%NODE1_SYNC%% %%NODE2_SYNC%%',
	1 => '%%NODE0_SYNC%% %%NODE2_PORT_97%%',
	2 => '%%NODE0_SYNC%%',
);
$c->write_file_expand(sub {
	my ($i) = @_;
	my $s = join ' ', map { "zone_sync_server 127.0.0.1:$_;" }
		split ' ', $servers{$i};
	(my $t = $conf) =~ s/\@SERVERS\@/$s/;
	return $t;
});

$c->run();

###############################################################################

sub api {
	my ($node, $method, $uri, $body) = @_;
	return http_json($c->http_port($node), $method, "/api/9$uri", $body);
}

sub get {
	my ($node, $key) = @_;
	my ($s, $d) = api($node, GET => '/http/keyvals/kv');
	return $s == 200 ? $d->{$key} : undef;
}

sub set {
	my ($node, $key, $value) = @_;
	my ($s) = api($node, POST => '/http/keyvals/kv', qq{{"$key":"$value"}});
	return $s == 201;
}

sub on {
	my ($node, $key, $value) = @_;
	return wait_for(sub { (get($node, $key) // '') eq $value }, timeout => 10);
}

###############################################################################

ok(set(0, 'x', 'from-a') && on(1, 'x', 'from-a') && on(2, 'x', 'from-a'),
	'A syncs to B and C');

ok(set(2, 'r', 'from-c') && on(0, 'r', 'from-c'), 'C\'s record reached A');

# A's later changes carry live POSITION frames past C's record to B; seeing
# z on B means the POSITION after y was read
ok(set(0, 'y', '1') && set(0, 'z', '2') && on(1, 'z', '2'),
	'A\'s live changes reached B');
is(get(1, 'r'), undef, 'B has not C\'s record (A does not forward it)');

# C leaves for good; A's syncing worker reconnects to B and resumes
$c->stop_node(2);
ok($c->reload_node(0), 'A reloaded');
ok(wait_for(sub { $c->node(0)->read_file('error.log')
	=~ /resuming zone "kv" for node/ }, timeout => 10), 'A resumed to B');

ok(on(1, 'r', 'from-c'), 'B got C\'s record through A\'s resume');
is(get(1, 'x'), 'from-a', 'B intact');


###############################################################################
