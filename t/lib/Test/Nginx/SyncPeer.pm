package Test::Nginx::SyncPeer;

# A peer speaking the zone_sync wire protocol (docs/PROTOCOL.md) from
# perl, for tests that play a hostile or scripted node.

=head1 NAME

Test::Nginx::SyncPeer - a scripted zone_sync peer

=head1 SYNOPSIS

    use Test::Nginx::SyncPeer;

    # the zones a node offers: [ [name, kind, kind_version], ... ]
    my $zones = Test::Nginx::SyncPeer->probe('127.0.0.1:' . $port);

    # as a client: HELLO exchanged, then records to the node
    my $p = Test::Nginx::SyncPeer->connect('127.0.0.1:' . $port,
        node_id => 0x1234567, zones => [ [ 'rl', 2, 2 ] ]);
    my $seq = $p->send_records('rl', 2, 2, [ { key => 'k',
        value => $bytes, hlc => hlc_now(), origin => 0x1234567 } ]);
    $p->wait_ack($seq) or die;      # applied (or skipped) by the node
    $p->close;

    # as a server: a node configured with "zone_sync_server" on this
    # port connects; its snapshot is read until SNAPSHOT_DONE
    my $l = Test::Nginx::SyncPeer->listen('127.0.0.1:' . $port);
    my $s = $l->accept(node_id => 0x7654321, zones => [ [ 'rl', 2, 2 ] ]);
    my $records = $s->snapshot;     # [ { zone, key, value, hlc, origin, ... } ]

    # frames by hand
    sync_frame($type, $body); sync_hello($node_id, @zones);
    sync_records_body($seq, $zone, $kind, $kv, $flags, @records);
    parse_records($body); parse_hello($body); hlc_now();

Timeouts are in seconds, scaled by TEST_NGINX_TIMEOUT_SCALE.

=cut

use strict;
use warnings;

use Exporter qw(import);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes ();

use Test::Nginx::Util qw(scaled);

our @EXPORT = qw(sync_frame sync_hello sync_records_body parse_records
    parse_hello hlc_now);

use constant {
    HELLO => 1, RECORDS => 2, ACK => 3, HEARTBEAT => 4, SNAPSHOT_DONE => 5,
    ERROR => 6,
};

###############################################################################

sub sync_frame {
    my ($type, $body) = @_;
    return pack('N', 1 + length $body) . chr($type) . $body;
}

# the body of a HELLO offering @zones ([name, kind, kind_version] each)
sub sync_hello {
    my ($node_id, @zones) = @_;
    my $b = 'ZSYN' . pack('n', 1) . pack('Q>', $node_id)
        . pack('n', scalar @zones);
    $b .= chr(length $_->[0]) . $_->[0] . chr($_->[1]) . pack('n', $_->[2])
        for @zones;
    return $b;
}

# the body of a RECORDS frame; a record is a hash: key, value, hlc,
# origin, ttl (default 0), tombstone (default false)
sub sync_records_body {
    my ($seq, $zone, $kind, $kv, $flags, @records) = @_;
    my $b = pack('Q>', $seq) . chr(length $zone) . $zone . chr($kind)
        . pack('n', $kv) . chr($flags) . pack('n', scalar @records);
    for my $r (@records) {
        my $value = $r->{tombstone} ? '' : $r->{value} // '';
        $b .= chr($r->{tombstone} ? 1 : 0) . pack('Q>', $r->{hlc})
            . pack('Q>', $r->{origin}) . pack('N', $r->{ttl} // 0)
            . pack('n', length $r->{key}) . $r->{key}
            . pack('N', length $value) . $value;
    }
    return $b;
}

sub parse_hello {
    my ($b) = @_;
    my ($magic, $version, $id, $n) = unpack('a4 n Q> n', $b);
    my $off = 16;
    my @zones;
    for (1 .. $n) {
        my $len = ord(substr($b, $off, 1));
        my $name = substr($b, $off + 1, $len);
        my ($kind, $kv) = unpack('C n', substr($b, $off + 1 + $len, 3));
        my @resume;
        # version 2: epoch, seen epoch, seen seq per zone
        @resume = unpack('Q> Q> Q>', substr($b, $off + 4 + $len, 24))
            if $version >= 2;
        push @zones, [ $name, $kind, $kv, @resume ];
        $off += 4 + $len + ($version >= 2 ? 24 : 0);
    }
    return { magic => $magic, version => $version, node_id => $id,
        zones => \@zones };
}

# a RECORDS body: { seq, zone, kind, kind_version, flags, records => [
# { key, value, hlc, origin, ttl, tombstone } ] }
sub parse_records {
    my ($b) = @_;
    my ($seq, $zlen) = unpack('Q> C', $b);
    my $zone = substr($b, 9, $zlen);
    my ($kind, $kv, $flags, $n) = unpack('C n C n', substr($b, 9 + $zlen, 6));
    my $off = 15 + $zlen;
    my @r;
    for (1 .. $n) {
        my ($rf, $hlc, $origin, $ttl, $klen) =
            unpack('C Q> Q> N n', substr($b, $off, 23));
        my $key = substr($b, $off + 23, $klen);
        my $vlen = unpack('N', substr($b, $off + 23 + $klen, 4));
        my $value = substr($b, $off + 27 + $klen, $vlen);
        push @r, { zone => $zone, key => $key, value => $value, hlc => $hlc,
            origin => $origin, ttl => $ttl, tombstone => $rf & 1 };
        $off += 27 + $klen + $vlen;
    }
    return { seq => $seq, zone => $zone, kind => $kind, kind_version => $kv,
        flags => $flags, records => \@r };
}

# a hybrid-logical-clock timestamp for now (section 5.1)
sub hlc_now {
    return int(Time::HiRes::time() * 1000) << 16;
}

###############################################################################

sub _new {
    my ($class, $sock) = @_;
    $sock->autoflush(1);
    return bless { sock => $sock, buf => '', seq => 0 }, $class;
}

# a client connection to $addr: sends HELLO, reads the node's
sub connect {
    my ($class, $addr, %o) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => $addr,
        Timeout => scaled(5)) or die "sync peer: connect $addr: $!\n";
    my $self = $class->_new($sock);
    $self->write(sync_frame(HELLO,
        sync_hello($o{node_id} // 0x5e17e57, @{$o{zones} // []})));
    my ($type, $body) = $self->read_frame($o{timeout} // 5);
    die "sync peer: no HELLO from $addr\n"
        unless defined $type && $type == HELLO;
    $self->{hello} = parse_hello($body);
    return $self;
}

# the zones a node offers, from its HELLO
sub probe {
    my ($class, $addr) = @_;
    my $p = $class->connect($addr, node_id => 0x9e0be, zones => []);
    $p->close;
    return $p->{hello}{zones};
}

# the node's HELLO, parsed
sub hello { return $_[0]->{hello} }

sub listen {
    my ($class, $addr) = @_;
    my $sock = IO::Socket::INET->new(LocalAddr => $addr, Listen => 4,
        ReuseAddr => 1) or die "sync peer: listen $addr: $!\n";
    return bless { listen => $sock }, $class;
}

# a server connection: waits for a node to connect, reads its HELLO and
# answers with ours (a version-1 HELLO: the node then speaks version 1);
# with "v1_only => 1" it answers a HELLO of another version as a version-1
# node does, ERROR UNSUPPORTED_VERSION, and returns the string "refused"
sub accept {
    my ($self, %o) = @_;
    my $l = $self->{listen};
    return undef unless IO::Select->new($l)->can_read(scaled($o{timeout} // 10));
    my $sock = $l->accept() or return undef;
    my $p = (ref $self)->_new($sock);
    my ($type, $body) = $p->read_frame($o{timeout} // 5);
    return undef unless defined $type && $type == HELLO;
    $p->{hello} = parse_hello($body);
    if ($o{v1_only} && $p->{hello}{version} != 1) {
        my $text = 'unsupported version';
        $p->write(sync_frame(ERROR, pack('n n', 1, length $text) . $text));
        $p->close;
        return 'refused';
    }
    $p->write(sync_frame(HELLO,
        sync_hello($o{node_id} // 0x5e17e58, @{$o{zones} // []})));
    return $p;
}

sub write {
    my ($self, $data) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($self->{sock}, $data, length($data) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }
    return 1;
}

# the next frame (HEARTBEATs skipped): (type, body), or () on EOF or
# timeout
sub read_frame {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 5);
    my $sel = IO::Select->new($self->{sock});
    for (;;) {
        my $b = \$self->{buf};
        if (length $$b >= 4) {
            my $len = unpack('N', $$b);
            if (length $$b >= 4 + $len) {
                my $type = ord(substr($$b, 4, 1));
                my $body = substr($$b, 5, $len - 1);
                substr($$b, 0, 4 + $len) = '';
                next if $type == HEARTBEAT;
                return ($type, $body);
            }
        }
        my $left = $deadline - Time::HiRes::time();
        return () if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($self->{sock}, my $chunk, 65536);
        return () unless $n;
        $$b .= $chunk;
    }
}

# sends one RECORDS frame; returns its seq
sub send_records {
    my ($self, $zone, $kind, $kv, $records, %o) = @_;
    my $seq = ++$self->{seq};
    $self->write(sync_frame(RECORDS, sync_records_body($seq, $zone, $kind,
        $kv, $o{snapshot} ? 1 : 0, @$records)));
    return $seq;
}

# true once the node acknowledged $seq
sub wait_ack {
    my ($self, $seq, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 5);
    for (;;) {
        my $left = ($deadline - Time::HiRes::time()) / scaled(1);
        return 0 if $left <= 0;
        my ($type, $body) = $self->read_frame($left) or return 0;
        next unless $type == ACK;
        return 1 if unpack('Q>', $body) >= $seq;
    }
}

# a client node's snapshot: a reference to every record up to
# SNAPSHOT_DONE (each frame acknowledged), or undef if it did not complete
# in time
sub snapshot {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + scaled($timeout // 10);
    my @records;
    for (;;) {
        my $left = ($deadline - Time::HiRes::time()) / scaled(1);
        return undef if $left <= 0;
        my ($type, $body) = $self->read_frame($left) or return undef;
        if ($type == RECORDS) {
            my $f = parse_records($body);
            push @records, @{$f->{records}};
            $self->write(sync_frame(ACK, pack('Q>', $f->{seq})));
        } elsif ($type == SNAPSHOT_DONE) {
            return \@records;
        } elsif ($type == ERROR) {
            return undef;
        }
    }
}

sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    CORE::close($self->{listen}) if $self->{listen};
    return 1;
}

1;
